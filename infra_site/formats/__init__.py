"""Date formats of the admin (``FORMAT_MODULE_PATH``): one ISO-like form for every page and column."""
