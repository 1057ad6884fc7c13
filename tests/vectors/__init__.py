"""Golden test vectors: fixed inputs and the exact bytes every versioned format produces."""
