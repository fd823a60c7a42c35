"""The diffusion side: input layouts (eq. 5), latent space, U-Net construction, guidance (eq. 6)."""
