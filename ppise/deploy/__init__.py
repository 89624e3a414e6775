"""Deploy path: export a static graph, predict with Paddle Inference, index and search a gallery.
Importing the package imports no paddle; the modules that need it import it themselves."""
