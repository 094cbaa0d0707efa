"""The Docker image: built from this tree and run as a user would."""
