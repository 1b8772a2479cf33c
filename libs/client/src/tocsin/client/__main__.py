from tocsin.client.cli import main

main()
