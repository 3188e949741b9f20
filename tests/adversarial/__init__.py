"""The adversarial suite: a real daemon with every front end on, under many attacks at once."""
