"""The ``scenegrad`` command line (:mod:`scenegrad.apps.cli`) and the demo app."""
