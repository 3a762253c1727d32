"""Pictures people would rather see than read."""

from .loss_curve import plot_loss_curve

__all__ = ["plot_loss_curve"]
