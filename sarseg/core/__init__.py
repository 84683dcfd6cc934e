"""The torch-free layer of the engine: standard library only, so Slicer's GUI process can import it.

It owns every format and shared record once: errors and exit codes, atomic files, the model card
(``model.json``), label schemes, ``dataset.json``, job records and progress events, and the default
folders. The rest of the engine and the Slicer modules' logic import these; nothing else parses those
files. ``Testing/test_architecture.py`` keeps the import rules.
"""
