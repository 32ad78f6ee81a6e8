"""Sparse autoencoders: read and write SAELens folders (`format`), train a TopK SAE on one layer
(`train`), and explain features by mutual information with a fixed vocabulary (`explain`). The
kinds that steer with SAE features (`sae_amplify`, `sae_calibrate`) live in bake.kinds."""
