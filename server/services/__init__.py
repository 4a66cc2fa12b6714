"""Wire request -> engine call -> wire response or stream chunks."""
