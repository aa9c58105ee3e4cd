"""Client for the Mixpeek bucket-sync API."""
