"""The edges: image decoding, input sources, atomic files, records, renderers and output sinks."""
