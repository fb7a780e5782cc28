"""Command-line interface: ``found segment | evaluate | train | download | bench``."""
