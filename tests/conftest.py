pytest_plugins = ["tests.kubelet_peer.plugin", "tests.system.plugin"]
