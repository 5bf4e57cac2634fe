pytest_plugins = ["tests.harness.kafka.fixtures"]
