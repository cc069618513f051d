"""The HTTP service and the web page, over the same core ``Library`` the CLI uses."""
