services = [{ name = "x", port = 1 }]
