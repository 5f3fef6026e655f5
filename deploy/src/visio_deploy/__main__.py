from visio_deploy.cli import main

main()
