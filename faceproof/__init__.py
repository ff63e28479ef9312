"""faceproof: command line and process supervision for the services."""
