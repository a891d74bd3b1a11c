"""Orders: validation, pricing and placement of the orders users buy."""
