"""Model families, each built from medjax.nn layers."""
