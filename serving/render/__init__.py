"""Fleet spec -> Ray Serve config: what ``slm-fleet serve`` deploys and a RayService runs."""
