"""Test utilities: fake TFRecords (`records`) for the tests of every engineer."""
