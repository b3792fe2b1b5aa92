"""The DDR model: frozen backbone, deep prefix modules, router, module store and the torch encoder."""
