"""Loopback fakes of outside services (an SMTP relay, the Resend API) that speak the real protocols."""
