"""Built-in DFKD methods, one file each; every module registers its method when imported."""
