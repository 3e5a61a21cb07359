"""One loader for MODULE:ATTR specifications."""
