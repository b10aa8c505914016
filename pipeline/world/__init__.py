"""The generated world (entities, facts, procedure documents, filler) and the reader of a user's corpus."""
