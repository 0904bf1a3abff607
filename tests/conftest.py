pytest_plugins = ["tests.kubelet_peer.plugin", "tests.system.plugin", "tests.mock_nvml.plugin"]
