from scenegrad.apps.cli import main

main()
