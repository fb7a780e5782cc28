"""The method as pure tensor functions: backbones, background discovery, the head, masks and instances."""
