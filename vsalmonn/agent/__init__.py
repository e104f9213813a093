"""The LLM agent loop and its model back-ends (DESIGN §6); built in a later issue."""
