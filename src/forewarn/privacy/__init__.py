"""Privacy: no contact details in logs (``logs``), and a customer's right of access and erasure (``subject``)."""
