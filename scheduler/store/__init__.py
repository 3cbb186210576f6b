"""Task stores: the contract (``base``) and its backends (``sqlite``, ``mongo``)."""
