"""The paper's method, one file per equation: eq. 5 ``input``, eq. 6 ``guidance``, eq. 7 ``loss``.

Plain torch functions over the components (U-Net, latent space, text encoder, schedule): no
Lightning, no files, no settings objects, so training and inference share them as they are.
"""
