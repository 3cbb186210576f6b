"""The web console's static files (served by ``scheduler.api.console``); no Python here."""
