"""Publishing results: check a folder against itself before it is shared (`validate.py`) and
merge folders from many machines into one dataset others can load (`export.py`). Reads results
and analysis only, as the report does."""
