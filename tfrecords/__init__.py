"""tfrecords package."""
