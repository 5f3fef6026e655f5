"""Proofs of the whole system's guarantees: chaos, hostile inputs, access and tampering."""
