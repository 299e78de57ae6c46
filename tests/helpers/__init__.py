"""What the tests share besides fixtures: the test settings' keys, the deployed stack and the
helpers that wait on it. Test modules and conftest.py files import from here; no test module
imports from conftest.py or from another test module."""

API_KEY = "test-key-0123456789abcdef-0123456789abcdef"
SECOND_API_KEY = "second-key-for-rotation-0001-0123456789abcdef"
SENDER = "+14155550199"
