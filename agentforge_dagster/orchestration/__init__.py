"""Jobs, retry policies, failure handling and the code that launches order runs."""
