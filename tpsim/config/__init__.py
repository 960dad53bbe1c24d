"""Typed configuration, validated when it is read (the edge), never later."""
