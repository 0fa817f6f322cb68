# Puts tests/ on the import path (pytest's rootdir conftest), so that every suite imports the
# shared helpers with `from harness import …`.
