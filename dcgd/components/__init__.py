"""The networks and schedules DCGD is made of: U-Net, latent space, text encoder, schedules.

Built from small configs or loaded from a Stable Diffusion directory / hub id by ``build``,
the one builder that training, export and checkpoint loading share.
"""
