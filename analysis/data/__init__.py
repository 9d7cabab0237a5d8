"""Dataset formats and validation: shared types, manifest / ImageFolder / COCO readers, images, archives, sampling."""
