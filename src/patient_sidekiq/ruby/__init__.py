"""Ruby's bytes: JSON text as JSON.generate writes it, Marshal of one string, encodings."""
