"""Finding nodes: interface addresses and the UDP beacons of clients and nodes."""
