"""Sources, decoding, encoders and the perception daemon (DESIGN §2, §5); built in a later issue."""
