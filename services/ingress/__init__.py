"""The public broker ingress: upstream commands in (validated as HTTP requests are), events out."""
