"""kernel/dma/: swiotlb."""
