"""Pure decisions: route resolution, task classification, cascade judging, answer checks, rollouts.

No Ray, no HTTP clients, no boto3, no model libraries: what needs one (an embedding) is passed in.
"""
