"""The Lambda's own code, copied into the zip by Chalice; none of it imports Chalice."""
