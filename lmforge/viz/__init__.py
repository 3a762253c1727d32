"""Pictures people would rather see than read."""

from .classify import plot_confusion_matrix, plot_embedding_clusters
from .loss_curve import plot_loss_curve

__all__ = ["plot_confusion_matrix", "plot_embedding_clusters", "plot_loss_curve"]

from .attention import plot_attention

__all__ += ["plot_attention"]
