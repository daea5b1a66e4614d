"""Model definitions: KL autoencoder, conditional UNet, text conditioning."""
