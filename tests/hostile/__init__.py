"""The hostile-input corpus (corpus.py) and the client that plays it against a proxy standing in
front of the recording replica (exchange.py): shared by tests/test_hostile.py and
bench/hardening.py, so the suite and the side-by-side run judge the same bytes the same way."""
